"""The streaming and scoring side: renders the ball, sends it, scores answers."""
