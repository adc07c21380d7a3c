"""Code shared by the three services: the public event contract and the plumbing around it."""
