"""Render: plain values (snapshots, regions, diffs, findings) into text a person or a
script reads: tables (table), show and list (snapshot), diff and replay (diff). Pure; it
imports only memsnap's core, never storage, capture or the CLI."""
