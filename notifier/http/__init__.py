"""The HTTP layer of both listeners: one connection protocol reading every
request with llhttp (through httptools), one request type every handler is
written against, and one seam where the api listener hands a request to
Klein (docs/architecture.rst: The HTTP layer)."""
