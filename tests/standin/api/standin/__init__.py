# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Package of the dify-api stand-in used by difyops' offline tests (see tests/standin/README.md).
