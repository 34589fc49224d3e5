"""The ``bpo-local`` command line. It talks to the library's public API only, never to llama.cpp."""
