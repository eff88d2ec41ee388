"""Controller: assigns external IPs from pools to LoadBalancer Services."""
