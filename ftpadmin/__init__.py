"""The web side of the FTP suite: admin, reports, and the standalone site."""
