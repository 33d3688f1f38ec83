"""glmkit.common — what every layer above glmkit.glm4 writes with: glmkit's cache paths, the atomic writer,
glmkit.json manifests, progress bars and status lines, and the disk check before writing."""
