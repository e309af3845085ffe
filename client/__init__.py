"""The receiving side: decode frames, find the ball, report its centre."""
