"""Dense-prediction heads (SSDLite, DeepLabV3+) on any keras-hub feature pyramid.

Heads see only a backbone's `pyramid_outputs`; they never import backbone
internals. The heads themselves arrive with their own issues.
"""
