"""Local stand-ins that speak the RunPod Serverless and vLLM APIs on loopback."""
