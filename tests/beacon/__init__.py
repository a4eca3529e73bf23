"""A second, smaller service for the gateway tests: one entity, no models (``SGM_TEST_ROLE=beacon``)."""
