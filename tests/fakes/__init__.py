"""Real stand-ins for outside services, used by the tests instead of patching clients.

``chat_server``: a local HTTP server that speaks the OpenAI chat-completions protocol (see its module).
"""
