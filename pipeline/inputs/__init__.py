"""Inputs: dataset adapters (WebVid, VideoHD folders, VIPSeg) that list a dataset's clips, and the
manifest they build (one row per clip, schemas/manifest.py), read by every worker."""
