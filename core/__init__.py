"""BrightRun's domain and services. Never imports streamlit."""

__version__ = "0.1.0"
