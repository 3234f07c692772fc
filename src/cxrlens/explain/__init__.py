"""The explain stage: plan which maps to compute, compute them with the attribution engine, store and draw them."""
