"""The drawing UI: static files and the server that hands them the backend's URL."""
