"""The Local Dense Captioner's models: RAM tags, LLM scores and local captions, Grounded-SAM masks."""
