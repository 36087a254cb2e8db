"""Files: stored blobs, file objects, image variants, signed downloads."""
