"""`limner serve`: the HTTP APIs (native, A1111, OpenAI) and the web studio, over the
durable job queue of `limner.jobs`. See docs/api.md."""
