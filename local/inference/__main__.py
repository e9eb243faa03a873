"""`python -m local.inference`: run the local inference server."""

from local.inference.server import main

main()
