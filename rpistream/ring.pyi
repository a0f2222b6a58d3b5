from rpistream._ring import Frame as Frame, FrameRing as FrameRing
