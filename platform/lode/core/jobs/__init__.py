"""The job mechanism every long-running capability uses. See README.md in this folder."""
