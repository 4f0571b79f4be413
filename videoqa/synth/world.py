"""A procedural video world whose ground truth makes every synthetic caption and answer checkable.

A scene is a few coloured shapes on a plain background; each object appears at some time, moves in a
straight line at a constant speed (a direction: left/right/up/down), and may leave. Videos are rendered with
numpy and encoded with PyAV (H.264 MP4). `Scene.timeline()` is the ground truth: what was where, when.
Deterministic per seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 200),
    "white": (245, 245, 245),
}
SHAPES = ("square", "circle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (40, 40, 40)


@dataclass(frozen=True)
class WorldConfig:
    """What the generator may produce."""

    width: int = 256
    """Frame width in pixels."""
    height: int = 192
    """Frame height in pixels."""
    fps: int = 8
    """Frames per second of the encoded video."""
    min_seconds: float = 5.0
    """Shortest video (the paper keeps 5-180 s videos)."""
    max_seconds: float = 12.0
    """Longest video."""
    max_objects: int = 4
    """Most objects in one scene."""
    object_size: int = 28
    """Side (square) or diameter (circle) in pixels."""

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.width < 4 * self.object_size or self.height < 4 * self.object_size:
            raise ValueError(f"a {self.width}x{self.height} frame is too small for objects of {self.object_size} px")


@dataclass
class SceneObject:
    id: int
    colour: str
    shape: str
    direction: str
    speed: float
    """Pixels per second."""
    start: tuple[float, float]
    """Centre (x, y) when it appears."""
    appear: float
    """Seconds."""
    leave: float
    """Seconds (the object is shown while appear <= t < leave)."""

    def position(self, t: float) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        dt = t - self.appear
        return self.start[0] + dx * self.speed * dt, self.start[1] + dy * self.speed * dt

    def visible(self, t: float) -> bool:
        return self.appear <= t < self.leave


@dataclass
class Scene:
    seed: int
    duration: float
    fps: int
    width: int
    height: int
    objects: list[SceneObject] = field(default_factory=list)

    def timeline(self) -> dict:
        """Ground truth: the objects with their motion, and appear/leave events in time order."""
        events = []
        for o in self.objects:
            events.append({"time": round(o.appear, 3), "event": "appears", "object": o.id})
            if o.leave < self.duration:
                events.append({"time": round(o.leave, 3), "event": "leaves", "object": o.id})
        events.sort(key=lambda e: (e["time"], e["object"]))
        return {
            "seed": self.seed,
            "duration": self.duration,
            "fps": self.fps,
            "size": [self.width, self.height],
            "objects": [asdict(o) for o in self.objects],
            "events": events,
        }

    def visible_at(self, t: float) -> list[SceneObject]:
        return [o for o in self.objects if o.visible(t)]


def make_scene(seed: int, cfg: WorldConfig | None = None) -> Scene:
    """A random scene; the same seed always gives the same scene. Objects never leave the frame while shown."""
    cfg = cfg or WorldConfig()
    rng = random.Random(seed)
    duration = round(rng.uniform(cfg.min_seconds, cfg.max_seconds), 1)
    scene = Scene(seed, duration, cfg.fps, cfg.width, cfg.height)
    colours = rng.sample(sorted(COLOURS), k=rng.randint(1, min(cfg.max_objects, len(COLOURS))))
    margin = cfg.object_size
    for i, colour in enumerate(colours):
        direction = rng.choice(sorted(DIRECTIONS))
        appear = 0.0 if i == 0 else round(rng.uniform(0, duration / 3), 2)
        shown = duration - appear
        dx, dy = DIRECTIONS[direction]
        span = (cfg.width if dx else cfg.height) - 2 * margin
        speed = round(rng.uniform(0.3, 0.8) * span / shown, 2)  # crosses at most 80% of the frame while shown
        travel = speed * shown
        lo_x, hi_x = margin + (travel if dx < 0 else 0), cfg.width - margin - (travel if dx > 0 else 0)
        lo_y, hi_y = margin + (travel if dy < 0 else 0), cfg.height - margin - (travel if dy > 0 else 0)
        start = (round(rng.uniform(lo_x, hi_x), 1), round(rng.uniform(lo_y, hi_y), 1))
        leave = duration if rng.random() < 0.7 else round(rng.uniform(appear + shown / 2, duration), 2)
        scene.objects.append(SceneObject(i, colour, rng.choice(SHAPES), direction, speed, start, appear, leave))
    return scene


def render_frame(scene: Scene, t: float, size: int) -> np.ndarray:
    """The frame shown at time t: uint8 RGB [H, W, 3]."""
    img = np.empty((scene.height, scene.width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[0 : scene.height, 0 : scene.width]
    half = size / 2
    for o in scene.visible_at(t):  # later objects are drawn on top
        cx, cy = o.position(t)
        if o.shape == "square":
            mask = (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
        else:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= half**2
        img[mask] = COLOURS[o.colour]
    return img


def render_video(scene: Scene, path: str | Path, cfg: WorldConfig | None = None) -> Path:
    """Encode the scene as an H.264 MP4 and write its ground truth next to it (same name, .json)."""
    cfg = cfg or WorldConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=scene.fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(int(round(scene.duration * scene.fps))):
            frame = av.VideoFrame.from_ndarray(render_frame(scene, i / scene.fps, cfg.object_size), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    path.with_suffix(".json").write_text(json.dumps(scene.timeline(), indent=1))
    return path
