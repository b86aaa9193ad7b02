"""uwsgi and SCGI (nginx's ``uwsgi_pass``, ``scgi_pass``): one request per connection, CGI variables in."""
