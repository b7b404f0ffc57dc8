"""Developer kit for Sightline: local model server, offline OCR stand-in and sample files."""
