"""Meta's own figures against ours: Meta's reports read (`meta_reports`) and matched to the charges (`matching`)."""
