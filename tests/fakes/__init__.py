"""Small honest fakes of the remote systems the agent talks to."""
