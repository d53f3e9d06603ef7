# Loads the schema on the database in DATABASE_URL:
#   RAILS_ENV=production SECRET_KEY_BASE=… DATABASE_URL=… ruby db/setup.rb
require_relative "../config/environment"
ActiveRecord::Schema.verbose = false
load File.expand_path("schema.rb", __dir__)
