"""Stand-in for libcamera's Python bindings: the Transform picamera2 configurations take."""


class Transform:
    def __init__(self, rotation=0, hflip=False, vflip=False, transpose=False):
        if rotation not in (0, 180):
            raise ValueError("Stand-in Transform supports rotation 0 and 180 only")
        self.hflip = bool(hflip) != (rotation == 180)
        self.vflip = bool(vflip) != (rotation == 180)
        self.transpose = bool(transpose)

    def __repr__(self):
        return f"<libcamera.Transform hflip={self.hflip} vflip={self.vflip}>"
