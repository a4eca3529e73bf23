"""The test harness: real Redis servers and topologies, the test project's settings, URLs and ASGI
application, a headless browser, helper processes, and a hostile service for the gateway tests."""
