"""FastCGI (nginx's ``fastcgi_pass``): the Responder role, requests multiplexed by id on kept connections."""
