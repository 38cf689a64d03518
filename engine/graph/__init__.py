"""Label statistics, adjacency, label sequences and label text embeddings."""
