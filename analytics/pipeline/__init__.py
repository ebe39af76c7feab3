"""Back ends that run the stages past one machine: `spark` bills and prices on Apache Spark with the local kernel."""
