"""The files `pbxguard init` writes for a new site (the same as examples/site/)."""
