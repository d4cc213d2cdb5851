"""MIG-Bench (COCO-MIG) scored as its own evaluation scores it: GroundingDINO + SAM + HSV."""
