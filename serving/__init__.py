"""Serving: the client of a served model (`serving.client`) and the development model server
that stands in for TF Serving (`serving.dev_server`), with the values both report
(`serving.values`)."""
