"""Recurrent three-level captioning at 1 fps (paper section 3.1, "Video detail description").

- level-1 every 10 s, from that clip's frames + the latest level-1 descriptions not yet summarised + the
  latest level-2;
- level-2 every 30 s, from the last three level-1 descriptions + the previous level-2;
- level-3 once at the end, from the latest level-2 + the level-1 descriptions it has not summarised (the
  latest level-1 when the video does not end on a 30 s boundary).
The calls are sequential by construction: each one reads what the previous ones wrote.
"""

from __future__ import annotations

import math

from videoqa.synth.schema import Caption, CaptionTask, Teacher, VideoContext

CLIP_SECONDS = 10.0
"""Level-1 period (paper: 10 s)."""
GROUP = 3
"""Level-1 descriptions per level-2 (paper: every 30 s)."""


async def recurrent_captions(teacher: Teacher, video: VideoContext) -> list[Caption]:
    out: list[Caption] = []
    pending: list[Caption] = []  # level-1 not yet summarised by a level-2
    level2: Caption | None = None
    clips = max(math.ceil(video.duration / CLIP_SECONDS - 1e-6), 1)
    for i in range(clips):
        a, b = i * CLIP_SECONDS, min((i + 1) * CLIP_SECONDS, video.duration)
        keep = [j for j, t in enumerate(video.timestamps) if a - 1e-6 <= t < b - 1e-6] or [
            min(range(len(video.timestamps)), key=lambda j: abs(video.timestamps[j] - a))
        ]
        context = [c.text for c in pending] + ([level2.text] if level2 else [])
        task = CaptionTask(
            1, a, b, video.frames[keep], [video.timestamps[j] for j in keep], context
        )  # frames: [F_clip, H, W, 3]
        one = Caption(1, a, b, await teacher.caption(video, task))
        out.append(one)
        pending.append(one)
        if len(pending) == GROUP:
            start = pending[0].start
            context = [c.text for c in pending] + ([level2.text] if level2 else [])
            level2 = Caption(2, start, b, await teacher.caption(video, CaptionTask(2, start, b, context=context)))
            out.append(level2)
            pending = []
    context = ([level2.text] if level2 else []) + [c.text for c in pending]
    out.append(
        Caption(
            3, 0.0, video.duration, await teacher.caption(video, CaptionTask(3, 0.0, video.duration, context=context))
        )
    )
    return out
