# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The dify-agent-backend stand-in (difyops-standin/dify-agent-backend:v3): see server/app.py.
