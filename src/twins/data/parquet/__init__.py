"""Parquet image data sets in the Hugging Face Hub's layout (`data/train-*.parquet`,
`data/validation-*.parquet`), read by index: the layout and its checks (`layout`), a file
read in byte ranges from a store (`remote_file`), the data set (`reader`)."""
