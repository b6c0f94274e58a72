"""屏对屏 sessions (issue #14, DESIGN §9, docs/sessions.md): the pure core. No I/O.

- tokens.py: a clerk's join token and a citizen's delegation (§2–3);
- machine.py: the sequencer's state of one session, its transitions as one table (§4);
- transcript.py: the hash chain of sequenced events and its signed head (§7);
- link.py: numbered frames delivered in order over a relay stream that may drop (§6).

The WebSocket handler and the relay stream feed these values and send what they return.
"""
