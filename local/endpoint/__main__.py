"""`python -m local.endpoint`: run the local GPU endpoint."""

from local.endpoint.server import main

main()
