"""The asyncio shells: upstream connections, the subscriber server, the service, the
capture writer and the client. Each receives, hands the input to a pure core and acts on
what it returns."""
