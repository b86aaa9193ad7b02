"""Static files served from the event loop, without entering an app (``--static /PREFIX=DIR``).

``resolve`` maps a request path to a file under DIR (and refuses everything that could leave it),
``conditional`` answers validators and ranges (pure functions of headers and a file's size and time),
``content_types`` names a file's media type, ``handler`` ties them to an Exchange.
"""
