"""A procedural video world whose ground truth makes every synthetic caption and answer checkable.

A video is a sequence of shots (scene cuts between them), each on its own background colour. Coloured shapes
appear, move in a straight line at constant speed (left/right/up/down), may change colour once, may pass
behind a wall (occlusion) and may leave. A shot may have a panning camera (the striped background scrolls).
Videos are rendered with numpy and encoded with PyAV (H.264 MP4); `Scene.timeline()` is the ground truth:
what was where, when. Deterministic per seed.

Presets: `dynamic` (several shots, pans, colour changes, walls, 5-180 s, 8-12 fps, three sizes; what the paper's
dynamic-video selection keeps) and `simple` (one static shot of 5-12 s; what a tiny model learns on a CPU in
minutes, used by the demo checkpoint's recipe).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

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
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark gray": (40, 40, 40),  # distinct in hue AND brightness, so a content detector sees every cut
    "navy": (20, 40, 150),
    "dark green": (20, 90, 45),
    "maroon": (120, 25, 35),
}
BACKGROUND = BACKGROUNDS["dark gray"]
WALL = (150, 150, 150)
STRIPE = 16
"""Width of the background's stripes in pixels (they make a camera pan visible)."""
STRIPE_SHADE = 25
"""Brightness added to every other stripe."""


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
    max_seconds: float = 90.0
    """Longest video."""
    max_objects: int = 3
    """Most objects in one shot (colours are unique over the whole video: at most 6 objects per video)."""
    object_size: int = 28
    """Side (square) or diameter (circle) in pixels."""
    min_shots: int = 1
    """Fewest shots (scenes) per video."""
    max_shots: int = 4
    """Most shots per video (scene cuts = shots - 1)."""
    pan_prob: float = 0.3
    """Chance that a shot's camera pans (left or right)."""
    change_prob: float = 0.3
    """Chance that one object of a shot changes colour."""
    wall_prob: float = 0.3
    """Chance that a shot has a wall that a horizontally moving object passes behind."""
    fps_choices: tuple[int, ...] = ()
    """If given, each video picks its frame rate from these (else `fps`)."""
    size_choices: tuple[tuple[int, int], ...] = ()
    """If given, each video picks its (width, height) from these (else `width` x `height`)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 1 <= self.min_shots <= self.max_shots:
            raise ValueError(f"need 1 <= min_shots <= max_shots, got {self.min_shots}, {self.max_shots}")
        for w, h in ((self.width, self.height), *self.size_choices):
            if w < 4 * self.object_size or h < 4 * self.object_size:
                raise ValueError(f"a {w}x{h} frame is too small for objects of {self.object_size} px")
        if any(f < 1 for f in self.fps_choices) or self.fps < 1:
            raise ValueError(f"frame rates must be >= 1, got {self.fps} / {self.fps_choices}")
        for name in ("pan_prob", "change_prob", "wall_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def preset(cls, name: Literal["dynamic", "simple"]) -> WorldConfig:
        if name == "simple":
            return cls(max_seconds=12.0, max_objects=4, max_shots=1, pan_prob=0.0, change_prob=0.0, wall_prob=0.0)
        if name == "dynamic":
            return cls(max_seconds=180.0, fps_choices=(8, 10, 12), size_choices=((256, 192), (320, 240), (384, 216)))
        raise ValueError(f"unknown world preset {name!r}; use 'dynamic' or 'simple'")


@dataclass
class Shot:
    index: int
    start: float
    end: float
    """Seconds (the shot is on screen while start <= t < end)."""
    background: str
    pan: str | None = None
    """Camera direction ('left'/'right') when the camera pans; the background then scrolls the other way."""
    pan_speed: float = 0.0
    """Pixels per second of background scroll."""
    wall: tuple[float, float] | None = None
    """Left and right x of a full-height wall drawn in front of the objects."""


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
    shot: int = 0
    colour_after: str | None = None
    """The colour it turns into at `change_at` (attribute change)."""
    change_at: float | None = None

    def position(self, t: float) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        dt = t - self.appear
        return self.start[0] + dx * self.speed * dt, self.start[1] + dy * self.speed * dt

    def visible(self, t: float) -> bool:
        """In the shot at time t (it may still be hidden behind a wall: see Scene.hidden)."""
        return self.appear <= t < self.leave

    def colour_at(self, t: float) -> str:
        if self.change_at is not None and t >= self.change_at:
            assert self.colour_after is not None  # set together with change_at
            return self.colour_after
        return self.colour


@dataclass
class Scene:
    seed: int
    duration: float
    fps: int
    width: int
    height: int
    objects: list[SceneObject] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)
    object_size: int = 28

    def shot_at(self, t: float) -> Shot:
        for s in self.shots:
            if s.start <= t < s.end:
                return s
        return self.shots[-1]

    def hidden(self, o: SceneObject, t: float) -> bool:
        """Entirely behind its shot's wall at time t."""
        wall = self.shots[o.shot].wall
        if wall is None or not o.visible(t):
            return False
        x = o.position(t)[0]
        half = self.object_size / 2
        return wall[0] <= x - half and x + half <= wall[1]

    def hidden_spans(self, o: SceneObject) -> list[tuple[float, float]]:
        """[from, to) seconds, on the frame grid, where the object is in its shot but entirely behind the wall."""
        spans: list[tuple[float, float]] = []
        for i in range(int(round(self.duration * self.fps))):
            t = i / self.fps
            if self.hidden(o, t):
                if spans and abs(spans[-1][1] - t) < 1e-6:
                    spans[-1] = (spans[-1][0], t + 1 / self.fps)
                else:
                    spans.append((t, t + 1 / self.fps))
        return [(round(a, 3), round(b, 3)) for a, b in spans]

    def timeline(self) -> dict:
        """Ground truth: shots, objects with their motion, and the events in time order."""
        events = []
        for s in self.shots:
            if s.index:
                events.append({"time": round(s.start, 3), "event": "scene cut", "shot": s.index})
        for o in self.objects:
            events.append({"time": round(o.appear, 3), "event": "appears", "object": o.id})
            if o.change_at is not None:
                events.append({"time": round(o.change_at, 3), "event": "changes colour", "object": o.id})
            for a, b in self.hidden_spans(o):
                events.append({"time": a, "event": "hidden behind the wall", "object": o.id})
                if b < o.leave - 1e-6:
                    events.append({"time": b, "event": "reappears", "object": o.id})
            if o.leave < self.shots[o.shot].end:
                events.append({"time": round(o.leave, 3), "event": "leaves", "object": o.id})
        events.sort(key=lambda e: (e["time"], e.get("object", -1)))
        return {
            "seed": self.seed,
            "duration": self.duration,
            "fps": self.fps,
            "size": [self.width, self.height],
            "object_size": self.object_size,
            "shots": [asdict(s) for s in self.shots],
            "objects": [asdict(o) for o in self.objects],
            "events": events,
        }

    def visible_at(self, t: float) -> list[SceneObject]:
        return [o for o in self.objects if o.visible(t)]

    @classmethod
    def from_timeline(cls, data: dict) -> Scene:
        """The scene back from its ground-truth JSON (what the oracle teacher reads next to a video)."""
        width, height = data["size"]
        scene = cls(data["seed"], data["duration"], data["fps"], width, height, object_size=data.get("object_size", 28))
        scene.shots = [Shot(**{**s, "wall": tuple(s["wall"]) if s.get("wall") else None}) for s in data["shots"]]
        scene.objects = [SceneObject(**{**o, "start": tuple(o["start"])}) for o in data["objects"]]
        return scene


def _split(rng: random.Random, duration: float, k: int) -> list[tuple[float, float]]:
    weights = [rng.uniform(0.6, 1.4) for _ in range(k)]
    edges, acc = [0.0], 0.0
    for w in weights[:-1]:
        acc += w / sum(weights) * duration
        edges.append(round(acc, 1))
    edges.append(duration)
    return list(zip(edges[:-1], edges[1:], strict=True))


def make_scene(seed: int, cfg: WorldConfig | None = None) -> Scene:
    """A random scene; the same seed always gives the same scene. Objects never leave the frame while shown."""
    cfg = cfg or WorldConfig()
    rng = random.Random(seed)
    duration = round(rng.uniform(cfg.min_seconds, cfg.max_seconds), 1)
    fps = rng.choice(cfg.fps_choices) if cfg.fps_choices else cfg.fps
    width, height = rng.choice(cfg.size_choices) if cfg.size_choices else (cfg.width, cfg.height)
    scene = Scene(seed, duration, fps, width, height, object_size=cfg.object_size)
    shots = rng.randint(cfg.min_shots, cfg.max_shots)
    palette = rng.sample(sorted(COLOURS), k=len(COLOURS))  # colours are unique over the video
    backgrounds = rng.sample(sorted(BACKGROUNDS), k=min(shots, len(BACKGROUNDS)))
    margin = cfg.object_size
    for index, (s0, s1) in enumerate(_split(rng, duration, shots)):
        shot = Shot(index, s0, s1, backgrounds[index % len(backgrounds)])
        scene.shots.append(shot)
        if rng.random() < cfg.pan_prob:
            shot.pan = rng.choice(["left", "right"])
            shot.pan_speed = round(rng.uniform(12, 30), 1)
        length = s1 - s0
        change = rng.random() < cfg.change_prob
        n = min(rng.randint(1, cfg.max_objects), len(palette) - change)  # keep a colour back for the change
        if n < 1:
            continue
        first = len(scene.objects)
        for i in range(n):
            colour = palette.pop()
            direction = rng.choice(sorted(DIRECTIONS))
            appear = s0 if i == 0 else round(s0 + rng.uniform(0, length / 3), 2)
            shown = s1 - appear
            dx, dy = DIRECTIONS[direction]
            span = (width if dx else height) - 2 * margin
            speed = round(rng.uniform(0.3, 0.8) * span / shown, 2)  # crosses at most 80% of the frame while shown
            travel = speed * shown
            lo_x, hi_x = margin + (travel if dx < 0 else 0), width - margin - (travel if dx > 0 else 0)
            lo_y, hi_y = margin + (travel if dy < 0 else 0), height - margin - (travel if dy > 0 else 0)
            start = (round(rng.uniform(lo_x, hi_x), 1), round(rng.uniform(lo_y, hi_y), 1))
            leave = s1 if rng.random() < 0.7 else round(rng.uniform(appear + shown / 2, s1), 2)
            scene.objects.append(
                SceneObject(
                    len(scene.objects), colour, rng.choice(SHAPES), direction, speed, start, appear, leave, index
                )
            )
        mine = scene.objects[first:]
        if change and palette:
            o = rng.choice(mine)
            o.colour_after = palette.pop()
            o.change_at = round(
                rng.uniform(o.appear + 0.3 * (o.leave - o.appear), o.appear + 0.7 * (o.leave - o.appear)), 2
            )
        movers = [o for o in mine if DIRECTIONS[o.direction][0] and o.colour_after is None]
        if movers and rng.random() < cfg.wall_prob:
            o = rng.choice(movers)
            x = o.position((o.appear + o.leave) / 2)[0]  # the wall stands where the object is half way through
            shot.wall = (round(x - cfg.object_size, 1), round(x + cfg.object_size, 1))
            for other in mine:  # nothing else may hide behind the wall for good: vertical movers step aside
                if not DIRECTIONS[other.direction][0] and abs(other.start[0] - x) < 2 * cfg.object_size:
                    side = x - 2.5 * cfg.object_size
                    side = side if side >= margin else x + 2.5 * cfg.object_size
                    other.start = (round(side, 1), other.start[1])
    return scene


def render_frame(scene: Scene, t: float, size: int) -> np.ndarray:
    """The frame shown at time t: uint8 RGB [H, W, 3]."""
    shot = scene.shot_at(t)
    xx = np.arange(scene.width)
    offset = 0.0
    if shot.pan:  # the camera pans one way, so the background moves the other
        offset = (1 if shot.pan == "right" else -1) * shot.pan_speed * (t - shot.start)
    stripes = (np.floor((xx + offset) / STRIPE).astype(int) % 2)[None, :, None]  # [1, W, 1]
    base = np.array(BACKGROUNDS[shot.background], dtype=np.int16)
    img = np.broadcast_to(base + stripes * STRIPE_SHADE, (scene.height, scene.width, 3)).astype(np.uint8)
    yy, xg = np.mgrid[0 : scene.height, 0 : scene.width]
    half = size / 2
    for o in scene.visible_at(t):  # later objects are drawn on top
        cx, cy = o.position(t)
        if o.shape == "square":
            mask = (np.abs(xg - cx) <= half) & (np.abs(yy - cy) <= half)
        else:
            mask = (xg - cx) ** 2 + (yy - cy) ** 2 <= half**2
        img[mask] = COLOURS[o.colour_at(t)]
    if shot.wall:
        img[:, int(round(shot.wall[0])) : int(round(shot.wall[1]))] = WALL
    return img


def render_video(scene: Scene, path: str | Path, cfg: WorldConfig | None = None) -> Path:
    """Encode the scene as an H.264 MP4 and write its ground truth next to it (same name, .json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=scene.fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(int(round(scene.duration * scene.fps))):
            frame = av.VideoFrame.from_ndarray(render_frame(scene, i / scene.fps, scene.object_size), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    path.with_suffix(".json").write_text(json.dumps(scene.timeline(), indent=1))
    return path
