"""The web dashboard under ``/ui``: server-rendered pages (Jinja) over the same database and tokens as the API,
with Plotly's own JavaScript (from the ``plotly`` wheel, no build step) for the charts."""
