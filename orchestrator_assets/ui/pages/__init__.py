"""One module per page of the review UI."""
