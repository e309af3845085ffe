"""The project's version, as ``balltracker_build_info`` and the reports give it."""

#: Bumped with each entry in CHANGELOG.md.
VERSION = "1.0.0"
