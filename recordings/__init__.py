"""Recording file names, links, access and retention."""
