"""Sightline: describe images that land in S3 with a vision-language model."""
