"""A project app with its own receivers of the FTP signals, beside the built-in ones."""
