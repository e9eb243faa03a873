"""Clients of the services outside BrightRun: the RunPod endpoint (`runpod`), file storage
(`storage`), the inference server (`inference`) and Supabase Auth (`auth`)."""
