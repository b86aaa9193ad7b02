"""uwsgi (nginx's ``uwsgi_pass``): one request per connection, a CGI variable block in, HTTP/1.x out."""
