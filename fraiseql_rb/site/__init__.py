"""The static report site: an index of every run, incident timelines and trends.

Reviewers read plain files (no server, no Jupyter); the site only reads artifacts, it never
runs a check, so it depends on `core` alone.
"""
