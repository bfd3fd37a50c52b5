"""Chat transcripts (K2's OpenAI-format API output): reading, rendering with exact segment spans, display.

``render_transcript(tokenizer, transcript)`` gives the token ids a model sees and every segment's span;
``transcript_view(ds, sequence_id)`` lays a recorded transcript out for widgets.
"""

from workbench.transcripts.as_generated import render_as_generated
from workbench.transcripts.messages import (
    Transcript,
    TranscriptError,
    message_steps,
    normalize_messages,
    read_transcripts,
    transcript_from_dict,
)
from workbench.transcripts.render import RenderedTranscript, Segment, render_transcript
from workbench.transcripts.view import SegmentView, step_rows, transcript_view

__all__ = [
    "RenderedTranscript",
    "Segment",
    "SegmentView",
    "Transcript",
    "TranscriptError",
    "message_steps",
    "normalize_messages",
    "read_transcripts",
    "render_as_generated",
    "render_transcript",
    "step_rows",
    "transcript_from_dict",
    "transcript_view",
]
