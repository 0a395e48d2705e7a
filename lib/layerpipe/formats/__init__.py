"""Image output formats: an OCI image layout as a directory or a tar, and the
Docker archive, which is the same tar with Docker's manifest.json beside it."""
