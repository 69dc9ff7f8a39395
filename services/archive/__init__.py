"""The archive service: the cold tier (checksummed record segments) and imaging blobs."""
