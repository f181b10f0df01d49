"""Code shared by the microblog services: events, codec, ids, settings, auth, adapters."""
